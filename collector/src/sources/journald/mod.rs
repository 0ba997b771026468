//! journald → `logs` (and, routed, `firewall` and `bans`).
//!
//! Runs `journalctl -o json --all` (configurable path, `--directory`/`--file`/`--merge`)
//! and reads its stdout line by line with a bound on the line length (an entry over
//! `max_entry_size` becomes one error row, counted as dropped, never an unbounded
//! allocation). Each line is parsed by the pure [`parse::parse_entry`].
//!
//! Two runs, catch-up then follow: with a saved cursor (or `start_at = "beginning"`),
//! journalctl first runs *without* `--follow`, after the cursor, until it exits: that
//! reads every boot the journal holds. Only then does `journalctl --follow` start, after
//! the cursor the catch-up ended at, which is in the journal's last boot. `--follow` alone
//! cannot do both: since systemd 250 it implies `--boot` (the current boot), so
//! `--follow --after-cursor=<a cursor in an earlier boot>` resumes in the last boot and
//! silently skips the rest of the earlier ones (journalctl 252 on a two-boot journal:
//! 9,999 entries where the catch-up reads 19,900) — what a collector that is behind when
//! the machine reboots would lose. For `--directory` and `--file` the follow run also
//! gets `--merge`, which lifts that implied `--boot` there (it changes nothing else for
//! them), so a boot that starts in those journals while following (a machine shipping to
//! `systemd-journal-remote` reboots) is followed too; a journalctl that refuses
//! `--follow --merge` (some 250-253 builds) follows without it, and that boot is read by
//! the catch-up of the next restart. When journalctl exits, it is restarted the same way:
//! catch-up from the last saved cursor, then follow.
//!
//! Position: a read batch becomes one spool group — its `logs`, `firewall` and `bans`
//! rows and, as the `journald` state, the `__CURSOR` of its last entry — written with one
//! fsync ([`SourceContext::emit_group`]): the rows and the cursor are durable together or
//! not at all. A restart, clean or `kill -9` (also during the catch-up), resumes with
//! `--after-cursor=<saved>`: nothing is skipped and nothing is spooled twice. A batch
//! whose entries were all filtered out still saves its cursor. With no saved state,
//! `start_at` chooses `end` (only new entries: straight to `--follow --lines=0`) or
//! `beginning` (everything the journal holds, every boot).
//!
//! Routing: a kernel entry whose MESSAGE holds `[UFW ` also yields a `firewall` row
//! (`[ufw] enabled` and `from_journald`), and an entry of fail2ban (identifier
//! `fail2ban-server`/`fail2ban`, or unit `fail2ban.service`) a `bans` row (`[fail2ban]
//! enabled` and `from_journald`). The unit filters decide what goes to `logs` only:
//! routing happens for every entry, and filtered entries still advance the cursor.
//!
//! Failure: journalctl missing, failing or exiting (the follow run at all, the catch-up
//! run with an error) is logged with its exit status and the end of its stderr, counted
//! in the source's `errors`, and retried with a backoff
//! (`restart_backoff_min` doubling to `restart_backoff_max`, which also bounds how often
//! it is logged); the collector keeps running. The child is killed on shutdown
//! (`kill_on_drop`).

pub mod parse;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure};
use jiff::tz::TimeZone;
use lake_format::logs::LogsBuilder;
use lake_format::rows::now_micros;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::parse::{JournalEntry, UnitFilter};
use super::fail2ban::{self, BansRows};
use super::ufw::{self, FirewallRows};
use super::{Emitted, SourceContext, SourceError};
use crate::stats::{SourceStats, Stats};

const NAME: &str = "journald";

/// Where to start when there is no saved state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Only entries written after the collector started.
    End,
    /// Every entry the journal holds.
    Beginning,
}

/// `[journald]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldFile {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_journalctl")]
    journalctl_path: PathBuf,
    #[serde(default)]
    directory: Option<PathBuf>,
    #[serde(default)]
    files: Vec<PathBuf>,
    #[serde(default)]
    merge: bool,
    #[serde(default = "default_start_at")]
    start_at: StartAt,
    #[serde(default)]
    include_units: Vec<String>,
    #[serde(default)]
    exclude_units: Vec<String>,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    #[serde(default = "default_batch_wait")]
    batch_wait: Dur,
    #[serde(default = "default_max_entry_size")]
    max_entry_size: ByteSize,
    #[serde(default = "default_backoff_min")]
    restart_backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    restart_backoff_max: Dur,
}

fn default_journalctl() -> PathBuf {
    PathBuf::from("journalctl")
}
const fn default_start_at() -> StartAt {
    StartAt::End
}
const fn default_batch_size() -> usize {
    5000
}
/// One batch a second at most: each costs an encode per table, an fsync and a request
/// per table.
const fn default_batch_wait() -> Dur {
    Dur(Duration::from_secs(1))
}
const fn default_max_entry_size() -> ByteSize {
    ByteSize(4 << 20)
}
const fn default_backoff_min() -> Dur {
    Dur(Duration::from_secs(1))
}
const fn default_backoff_max() -> Dur {
    Dur(Duration::from_secs(60))
}

impl Default for JournaldFile {
    fn default() -> Self {
        JournaldFile {
            enabled: false,
            journalctl_path: default_journalctl(),
            directory: None,
            files: Vec::new(),
            merge: false,
            start_at: default_start_at(),
            include_units: Vec::new(),
            exclude_units: Vec::new(),
            batch_size: default_batch_size(),
            batch_wait: default_batch_wait(),
            max_entry_size: default_max_entry_size(),
            restart_backoff_min: default_backoff_min(),
            restart_backoff_max: default_backoff_max(),
        }
    }
}

/// `[journald]`, validated.
#[derive(Debug, Clone)]
pub struct JournaldConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// The journalctl binary.
    pub journalctl_path: PathBuf,
    /// `--directory`.
    pub directory: Option<PathBuf>,
    /// `--file`, each.
    pub files: Vec<PathBuf>,
    /// `--merge`.
    pub merge: bool,
    /// Start without a saved state.
    pub start_at: StartAt,
    /// Which units go to `logs`.
    pub units: UnitFilter,
    /// Entries per batch at most.
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    pub batch_wait: Duration,
    /// Longest JSON line kept, bytes.
    pub max_entry_size: usize,
    /// First restart wait.
    pub restart_backoff_min: Duration,
    /// Longest restart wait.
    pub restart_backoff_max: Duration,
}

impl JournaldFile {
    /// Checks the section.
    pub fn validate(self) -> anyhow::Result<JournaldConfig> {
        if self.directory.is_some() && !self.files.is_empty() {
            bail!("journald.directory and journald.files are both set: journalctl takes one or the other");
        }
        ensure!(self.batch_size > 0, "journald.batch_size must be more than zero");
        ensure!(!self.batch_wait.0.is_zero(), "journald.batch_wait must be more than zero");
        ensure!(self.max_entry_size.0 >= 64 << 10, "journald.max_entry_size must be at least 64KiB");
        let max_entry_size = usize::try_from(self.max_entry_size.0)
            .map_err(|_| anyhow::anyhow!("journald.max_entry_size is too large"))?;
        ensure!(!self.restart_backoff_min.0.is_zero(), "journald.restart_backoff_min must be more than zero");
        ensure!(
            self.restart_backoff_min <= self.restart_backoff_max,
            "journald.restart_backoff_min ({}) must not exceed journald.restart_backoff_max ({})",
            self.restart_backoff_min,
            self.restart_backoff_max
        );
        for (key, pats) in [("include_units", &self.include_units), ("exclude_units", &self.exclude_units)] {
            ensure!(pats.iter().all(|p| !p.trim().is_empty()), "journald.{key} holds an empty unit name");
        }
        Ok(JournaldConfig {
            enabled: self.enabled,
            journalctl_path: self.journalctl_path,
            directory: self.directory,
            files: self.files,
            merge: self.merge,
            start_at: self.start_at,
            units: UnitFilter { include: self.include_units, exclude: self.exclude_units },
            batch_size: self.batch_size,
            batch_wait: self.batch_wait.0,
            max_entry_size,
            restart_backoff_min: self.restart_backoff_min.0,
            restart_backoff_max: self.restart_backoff_max.0,
        })
    }
}

/// The saved state: the cursor of the last spooled entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JournaldState {
    /// journald's opaque `__CURSOR`.
    pub cursor: String,
}

/// The running source.
#[derive(Debug)]
pub struct JournaldSource {
    config: JournaldConfig,
    ctx: SourceContext,
    ufw: bool,
    fail2ban: Option<TimeZone>,
}

/// Which of the two journalctl runs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Without `--follow`: every entry after the cursor, in every boot, then it exits.
    CatchUp,
    /// `--follow` after the cursor the catch-up ended at.
    Follow,
}

/// How one journalctl run ended.
enum RunEnd {
    Cancelled,
    Exited(Exit),
}

/// A journalctl run that ended by itself.
struct Exit {
    /// Entries read (and spooled) during the run.
    entries: u64,
    /// Exited with status 0 and its output read without error.
    success: bool,
    status: String,
    stderr: String,
    read_error: Option<String>,
}

impl JournaldSource {
    /// A source; `ufw` routes kernel ufw lines to `firewall`, `fail2ban` (the zone of its
    /// timestamps) routes fail2ban messages to `bans`.
    pub fn new(config: JournaldConfig, ctx: SourceContext, ufw: bool, fail2ban: Option<TimeZone>) -> Self {
        JournaldSource { config, ctx, ufw, fail2ban }
    }

    /// Follows the journal until `cancel`. Only spool and state failures end it;
    /// journalctl trouble is retried.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let stats = self.ctx.source_stats(NAME);
        let mut cursor = self.ctx.load_state::<JournaldState>(NAME).await?.map(|s| s.cursor);
        let mut backoff = self.config.restart_backoff_min;
        // journalctl >= 250 makes --follow show only one boot unless --merge is given (for
        // --directory and --file, --merge changes nothing else); a journalctl that refuses
        // the two together (some 250-253 builds) follows without it.
        let mut merge_on_follow =
            !self.config.merge && (self.config.directory.is_some() || !self.config.files.is_empty());
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            // Catch up first, without --follow: with a cursor in an earlier boot, journalctl
            // --follow --after-cursor resumes in the last boot and skips the rest of the
            // earlier ones (systemd 250-255), so a collector that was behind when the
            // machine rebooted would lose them.
            let catch_up = cursor.is_some() || self.config.start_at == StartAt::Beginning;
            let passes: &[Pass] = if catch_up { &[Pass::CatchUp, Pass::Follow] } else { &[Pass::Follow] };
            for &pass in passes {
                let child = match self.spawn(cursor.as_deref(), pass, merge_on_follow) {
                    Ok(child) => child,
                    Err(e) => {
                        Stats::add(&stats.errors, 1);
                        error!(
                            path = %self.config.journalctl_path.display(),
                            error = %e,
                            retry_in = ?backoff,
                            "cannot run journalctl (install systemd's journalctl or set journald.journalctl_path)"
                        );
                        break;
                    }
                };
                let exit = match self.read_run(child, &mut cursor, &stats, &cancel).await? {
                    RunEnd::Cancelled => return Ok(()),
                    RunEnd::Exited(exit) => exit,
                };
                if exit.entries > 0 {
                    backoff = self.config.restart_backoff_min;
                }
                if pass == Pass::CatchUp && exit.success {
                    info!(entries = exit.entries, "journal caught up; following it");
                    continue;
                }
                // A catch-up that failed, or the follow run ending: both are retried from
                // the last saved cursor, catching up again first.
                Stats::add(&stats.errors, 1);
                error!(
                    pass = ?pass,
                    status = %exit.status,
                    stderr = %exit.stderr,
                    read_error = ?exit.read_error,
                    entries = exit.entries,
                    "journalctl exited; restarting it from the last saved cursor"
                );
                if pass == Pass::Follow && merge_on_follow && exit.entries == 0 && exit.stderr.contains("--merge") {
                    merge_on_follow = false;
                    warn!("this journalctl refuses --follow with --merge: following without it (entries of a boot that starts while following are read at the next restart)");
                }
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.restart_backoff_max);
        }
    }

    fn spawn(&self, cursor: Option<&str>, pass: Pass, merge_on_follow: bool) -> std::io::Result<Child> {
        let c = &self.config;
        let mut cmd = Command::new(&c.journalctl_path);
        cmd.args(["--output=json", "--all", "--no-pager"]);
        match pass {
            // No --lines: without --follow journalctl prints every entry (after the cursor).
            Pass::CatchUp => {
                if let Some(cur) = cursor {
                    cmd.arg(format!("--after-cursor={cur}"));
                }
            }
            Pass::Follow => {
                cmd.arg("--follow");
                match (cursor, c.start_at) {
                    (Some(cur), _) => {
                        cmd.arg(format!("--after-cursor={cur}"));
                        // --follow alone shows only the last 10 entries; "all" lets the cursor decide.
                        cmd.arg("--lines=all");
                    }
                    (None, StartAt::End) => {
                        cmd.arg("--lines=0");
                    }
                    // The catch-up found no entry at all.
                    (None, StartAt::Beginning) => {
                        cmd.arg("--lines=all");
                    }
                }
            }
        }
        if let Some(d) = &c.directory {
            cmd.arg(format!("--directory={}", d.display()));
        }
        for f in &c.files {
            cmd.arg(format!("--file={}", f.display()));
        }
        if c.merge || (pass == Pass::Follow && merge_on_follow) {
            cmd.arg("--merge");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let child = cmd.spawn()?;
        info!(cursor = cursor.is_some(), pass = ?pass, "journalctl started");
        Ok(child)
    }

    /// Reads one journalctl run to its end (or `cancel`), spooling batch by batch.
    async fn read_run(
        &self,
        mut child: Child,
        cursor: &mut Option<String>,
        stats: &Arc<SourceStats>,
        cancel: &CancellationToken,
    ) -> Result<RunEnd, SourceError> {
        let stderr_tail = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                // Keep the end: that is where journalctl says why it stopped.
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 4096 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
                String::from_utf8_lossy(&tail).trim().to_string()
            })
        });
        let Some(stdout) = child.stdout.take() else {
            return Ok(RunEnd::Exited(Exit {
                entries: 0,
                success: false,
                status: "no stdout".to_string(),
                stderr: String::new(),
                read_error: None,
            }));
        };
        let mut reader = LineReader::new(BufReader::with_capacity(256 << 10, stdout), self.config.max_entry_size);
        let mut batch = Batch::default();
        let mut entries = 0u64;
        let mut read_error = None;
        'run: loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return Ok(RunEnd::Cancelled),
                l = reader.next() => l,
            };
            match first {
                Ok(Some(line)) => self.add(&mut batch, line, stats),
                Ok(None) => break 'run,
                Err(e) => {
                    read_error = Some(e);
                    break 'run;
                }
            }
            let deadline = Instant::now() + self.config.batch_wait;
            let mut eof = false;
            while batch.entries < self.config.batch_size {
                tokio::select! {
                    // Unspooled entries are simply read again after the restart.
                    _ = cancel.cancelled() => return Ok(RunEnd::Cancelled),
                    _ = tokio::time::sleep_until(deadline) => break,
                    l = reader.next() => match l {
                        Ok(Some(line)) => self.add(&mut batch, line, stats),
                        Ok(None) => { eof = true; break }
                        Err(e) => { read_error = Some(e); eof = true; break }
                    },
                }
            }
            entries += batch.entries as u64;
            if let Emitted::Cancelled = self.flush(&mut batch, cursor, cancel).await? {
                return Ok(RunEnd::Cancelled);
            }
            if eof {
                break 'run;
            }
        }
        // What was read before the end is spooled, with its cursor, by now.
        if batch.entries > 0 {
            entries += batch.entries as u64;
            if let Emitted::Cancelled = self.flush(&mut batch, cursor, cancel).await? {
                return Ok(RunEnd::Cancelled);
            }
        }
        let (status, exited_ok) = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(Ok(s)) => (s.to_string(), s.success()),
            Ok(Err(e)) => (e.to_string(), false),
            Err(_) => {
                let _ = child.kill().await;
                ("killed after closing its output".to_string(), false)
            }
        };
        let stderr = match stderr_tail {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        Ok(RunEnd::Exited(Exit {
            entries,
            success: exited_ok && read_error.is_none(),
            status,
            stderr,
            read_error: read_error.map(|e| e.to_string()),
        }))
    }

    fn add(&self, batch: &mut Batch, line: Line, stats: &SourceStats) {
        let node: &str = &self.ctx.node;
        batch.entries += 1;
        Stats::add(&stats.read, 1);
        let bytes = match line {
            Line::Full(b) => b,
            Line::TooLong(n) => {
                Stats::add(&stats.dropped, 1);
                let entry = JournalEntry {
                    ts: now_micros(),
                    priority: Some(3),
                    message: Some(format!(
                        "journal entry of {n} bytes is over journald.max_entry_size ({} bytes): dropped",
                        self.config.max_entry_size
                    )),
                    attrs: [("error".to_string(), "too_large".to_string())].into(),
                    ..JournalEntry::default()
                };
                entry.push_to(&mut batch.logs, node, NAME);
                return;
            }
        };
        let entry = match parse::parse_entry(&bytes) {
            Ok(e) => e,
            Err(err) => {
                Stats::add(&stats.parse_errors, 1);
                let entry = JournalEntry {
                    ts: now_micros(),
                    priority: Some(3),
                    message: Some(String::from_utf8_lossy(&bytes).into_owned()),
                    attrs: [("error".to_string(), err.to_string())].into(),
                    ..JournalEntry::default()
                };
                entry.push_to(&mut batch.logs, node, NAME);
                return;
            }
        };
        if let Some(c) = &entry.cursor {
            batch.cursor = Some(c.clone());
        }
        if self.ufw && entry.is_kernel() {
            if let Some(msg) = entry.message.as_deref().filter(|m| m.contains("[UFW ")) {
                let s = self.ctx.source_stats("ufw");
                Stats::add(&s.read, 1);
                match ufw::parse(msg) {
                    Ok(ev) => batch.firewall.push(node, entry.ts, &ev),
                    Err(_) => Stats::add(&s.parse_errors, 1),
                }
            }
        }
        if let (Some(tz), true) = (&self.fail2ban, entry.is_fail2ban()) {
            if let Some(msg) = entry.message.as_deref() {
                let s = self.ctx.source_stats("fail2ban");
                Stats::add(&s.read, 1);
                match fail2ban::parse(msg, tz) {
                    Ok(Some(ev)) => batch.bans.push(node, entry.ts, &ev),
                    Ok(None) => {}
                    Err(_) => Stats::add(&s.parse_errors, 1),
                }
            }
        }
        if self.config.units.keeps(entry.unit.as_deref()) {
            entry.push_to(&mut batch.logs, node, NAME);
        }
    }

    /// Spools every table of the batch and its cursor as one group.
    async fn flush(
        &self,
        batch: &mut Batch,
        cursor: &mut Option<String>,
        cancel: &CancellationToken,
    ) -> Result<Emitted, SourceError> {
        let encode = |e: arrow_schema::ArrowError| SourceError::Encode { source_name: NAME, error: e.to_string() };
        let mut tables = Vec::new();
        if !batch.logs.is_empty() {
            tables.push((NAME, Table::Logs, batch.logs.finish().map_err(encode)?));
        }
        if !batch.firewall.is_empty() {
            tables.push(("ufw", Table::Firewall, batch.firewall.finish().map_err(encode)?));
        }
        if !batch.bans.is_empty() {
            tables.push(("fail2ban", Table::Bans, batch.bans.finish().map_err(encode)?));
        }
        batch.entries = 0;
        // Entries without a cursor (unparseable) keep the last one: on a restart they are
        // read again only if nothing after them was spooled.
        let new_cursor = batch.cursor.take().or_else(|| cursor.clone());
        if tables.is_empty() && new_cursor == *cursor {
            return Ok(Emitted::Spooled(Vec::new()));
        }
        let state = new_cursor.clone().map(|cursor| JournaldState { cursor });
        let emitted = self.ctx.emit_group(NAME, tables, state.as_ref(), cancel).await?;
        if let Emitted::Spooled(_) = emitted {
            *cursor = new_cursor;
        }
        Ok(emitted)
    }
}

/// Rows of one read batch, per table, and the cursor that covers them.
#[derive(Default)]
struct Batch {
    logs: LogsBuilder,
    firewall: FirewallRows,
    bans: BansRows,
    cursor: Option<String>,
    entries: usize,
}

/// One line of output.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line, without its newline.
    Full(Vec<u8>),
    /// A line over the bound: only its length is known, its bytes were skipped.
    TooLong(usize),
}

/// Reads `\n`-terminated lines with a bound on their length. Cancel-safe: the only await
/// is `fill_buf`, and what it returned is copied and consumed before the next one.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    skipped: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// A reader keeping lines of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader { inner, buf: Vec::new(), max, skipped: None }
    }

    /// The next line; `None` at the end (a last line without newline is returned first).
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Ok(match self.skipped.take() {
                    Some(n) => Some(Line::TooLong(n)),
                    None if !self.buf.is_empty() => Some(Line::Full(std::mem::take(&mut self.buf))),
                    None => None,
                });
            }
            let (chunk_len, used, ends) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1, true),
                None => (avail.len(), avail.len(), false),
            };
            match &mut self.skipped {
                Some(n) => *n += chunk_len,
                None if self.buf.len() + chunk_len > self.max => {
                    self.skipped = Some(self.buf.len() + chunk_len);
                    self.buf = Vec::new();
                }
                None => self.buf.extend_from_slice(&avail[..chunk_len]),
            }
            self.inner.consume(used);
            if ends {
                return Ok(Some(match self.skipped.take() {
                    Some(n) => Line::TooLong(n),
                    None => Line::Full(std::mem::take(&mut self.buf)),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200_000));
        input.extend_from_slice(b"\nafter\nlast");
        let mut r = LineReader::new(BufReader::with_capacity(1024, &input[..]), 100_000);
        assert_eq!(r.next().await.unwrap(), Some(Line::Full(b"short".to_vec())));
        assert_eq!(r.next().await.unwrap(), Some(Line::TooLong(200_000)));
        assert_eq!(r.next().await.unwrap(), Some(Line::Full(b"after".to_vec())));
        assert_eq!(r.next().await.unwrap(), Some(Line::Full(b"last".to_vec())));
        assert_eq!(r.next().await.unwrap(), None);
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = JournaldFile::default().validate().unwrap();
        assert!(!c.enabled);
        assert_eq!(c.start_at, StartAt::End);
        let both = JournaldFile { directory: Some("/x".into()), files: vec!["/y".into()], ..JournaldFile::default() };
        let err = both.validate().unwrap_err().to_string();
        assert!(err.contains("journald.directory") && err.contains("journald.files"), "{err}");
    }
}
