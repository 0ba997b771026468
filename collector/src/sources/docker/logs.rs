//! Container logs → `logs` rows: the pure parts (stream framing, lines, position) and the
//! follower of one container.
//!
//! **Framing.** `/containers/{id}/logs` of a container without a TTY is multiplexed: each
//! frame is an 8-byte header (stream: 1 stdout, 2 stderr; three zero bytes; payload length,
//! big-endian u32) then the payload. A TTY container (`Config.Tty`) sends the raw
//! stream, all of it stdout. [`Demux`] turns either into per-stream bytes, headers split
//! across reads included.
//!
//! **Lines.** Each stream is cut at `\n` ([`Lines`]); a line longer than
//! `max_line_bytes` keeps its first `max_line_bytes` with attr `truncated = "true"` and
//! the rest until the newline is skipped (counted), never held. With `timestamps=1` every
//! line starts with Docker's RFC 3339 nanosecond time and a space: that is the row's `ts`
//! and the line's position. Text that is not UTF-8 is kept lossy in `message`, its exact
//! bytes hex-encoded in attr `raw_hex` (as the other sources keep unparsed lines) — when
//! the log driver kept them: `json-file`, Docker's default, stores JSON strings and has
//! already replaced such bytes by U+FFFD; `local` keeps them. A TTY's
//! `\r` before the newline is dropped.
//!
//! **Position** ([`LogPos`]): the newest line time spooled and how many lines of exactly
//! that time were spooled. A follow reopens with `since=` that time (Docker includes
//! lines at `since`, and older daemons cut `since` to the second): lines older are
//! skipped, and of the lines at exactly that time the first `at` are skipped — so a
//! restart neither repeats nor loses a line. The position is committed with the rows in
//! one spool group ([`super::Shared::commit`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lake_format::logs::{hex, LogRow, LogsBuilder};
use lake_format::rows::now_micros;
use lake_format::Table;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::api::{since_param, ApiError};
use super::events::{COMPOSE_PROJECT, COMPOSE_SERVICE};
use super::{Container, Shared};
use crate::sources::SourceError;
use crate::stats::Stats;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// stdout (and a TTY's whole output).
    Stdout,
    /// stderr.
    Stderr,
}

impl Out {
    fn name(self) -> &'static str {
        match self {
            Out::Stdout => "stdout",
            Out::Stderr => "stderr",
        }
    }
    /// Syslog priority: err for stderr, info for stdout.
    fn priority(self) -> i64 {
        match self {
            Out::Stdout => 6,
            Out::Stderr => 3,
        }
    }
}

/// Splits the logs stream into per-stream bytes.
#[derive(Debug)]
pub struct Demux {
    tty: bool,
    header: Vec<u8>,
    left: usize,
    out: Out,
}

impl Demux {
    /// A demultiplexer for a container with (`tty`) or without a TTY.
    pub fn new(tty: bool) -> Self {
        Demux { tty, header: Vec::with_capacity(8), left: 0, out: Out::Stdout }
    }

    /// Feeds one read; `each` gets the payload bytes in order, with their stream.
    pub fn feed(&mut self, mut chunk: &[u8], each: &mut impl FnMut(Out, &[u8])) {
        if self.tty {
            each(Out::Stdout, chunk);
            return;
        }
        while !chunk.is_empty() {
            if self.left == 0 {
                let need = 8 - self.header.len();
                let take = need.min(chunk.len());
                self.header.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.header.len() < 8 {
                    return;
                }
                // 0 is stdin (never sent for logs), 3 the daemon's own error text.
                self.out = if matches!(self.header[0], 2 | 3) { Out::Stderr } else { Out::Stdout };
                let len = u32::from_be_bytes([self.header[4], self.header[5], self.header[6], self.header[7]]);
                self.left = len as usize;
                self.header.clear();
                continue;
            }
            let take = self.left.min(chunk.len());
            each(self.out, &chunk[..take]);
            self.left -= take;
            chunk = &chunk[take..];
        }
    }
}

/// A line cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The stream.
    pub out: Out,
    /// The bytes, without the newline (at most `max_line_bytes`).
    pub bytes: Vec<u8>,
    /// Longer than `max_line_bytes`: cut.
    pub truncated: bool,
}

/// Cuts each stream's bytes into lines of bounded length.
#[derive(Debug)]
pub struct Lines {
    max: usize,
    open: [(Vec<u8>, bool); 2],
    /// Bytes skipped past `max` since the last look.
    pub skipped: u64,
}

impl Lines {
    /// Lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Lines { max, open: [(Vec::new(), false), (Vec::new(), false)], skipped: 0 }
    }

    /// Feeds bytes of `out`; `each` gets every line they complete.
    pub fn feed(&mut self, out: Out, mut bytes: &[u8], each: &mut impl FnMut(Line)) {
        let (buf, truncated) = &mut self.open[out as usize];
        while !bytes.is_empty() {
            let (part, rest, done) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = self.max.saturating_sub(buf.len());
            if part.len() > room {
                buf.extend_from_slice(&part[..room]);
                self.skipped += (part.len() - room) as u64;
                *truncated = true;
            } else {
                buf.extend_from_slice(part);
            }
            if done {
                if buf.last() == Some(&b'\r') && !*truncated {
                    buf.pop();
                }
                each(Line { out, bytes: std::mem::take(buf), truncated: std::mem::replace(truncated, false) });
            }
            bytes = rest;
        }
    }
}

/// Splits Docker's `<RFC 3339 nanos> <text>` into the time (ns) and the text.
pub fn split_timestamp(line: &[u8]) -> Option<(i64, &[u8])> {
    let sp = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let ts = std::str::from_utf8(&line[..sp]).ok()?.parse::<jiff::Timestamp>().ok()?;
    let nanos = i64::try_from(ts.as_nanosecond()).ok()?;
    Some((nanos, line.get(sp + 1..).unwrap_or(&[])))
}

/// Where a container's logs were spooled up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogPos {
    /// Newest line time spooled, ns since the epoch (0: from the container's first line).
    pub ts: i64,
    /// Lines of exactly `ts` spooled.
    pub at: u32,
}

/// Skips the lines a reopened follow sends again.
#[derive(Debug)]
pub struct Resume {
    from: LogPos,
    skip_at: u32,
}

impl Resume {
    /// Resuming after `from`.
    pub fn new(from: LogPos) -> Self {
        Resume { from, skip_at: from.at }
    }

    /// Whether a line of time `ts` is new.
    pub fn is_new(&mut self, ts: i64) -> bool {
        if ts < self.from.ts {
            return false;
        }
        if ts == self.from.ts && self.skip_at > 0 {
            self.skip_at -= 1;
            return false;
        }
        true
    }
}

impl LogPos {
    /// The position after a line of time `ts`.
    pub fn after(self, ts: i64) -> LogPos {
        match ts.cmp(&self.ts) {
            std::cmp::Ordering::Greater => LogPos { ts, at: 1 },
            std::cmp::Ordering::Equal => LogPos { ts, at: self.at + 1 },
            // Docker's stdout and stderr copiers may write a line stamped a little earlier
            // after a later one: the position keeps the newest time.
            std::cmp::Ordering::Less => self,
        }
    }
}

/// The `logs` rows of one container.
#[derive(Debug)]
pub struct ContainerLogs {
    logs: LogsBuilder,
    unit: String,
    attrs: Vec<(&'static str, String)>,
}

impl ContainerLogs {
    /// Rows of container `c`.
    pub fn new(c: &Container) -> Self {
        let service = c.labels.get(COMPOSE_SERVICE);
        let unit = service.cloned().unwrap_or_else(|| c.name.clone());
        let mut attrs = vec![("container", c.name.clone()), ("container_id", c.id.clone()), ("image", c.image.clone())];
        if let Some(p) = c.labels.get(COMPOSE_PROJECT) {
            attrs.push(("compose_project", p.clone()));
        }
        ContainerLogs { logs: LogsBuilder::new(), unit, attrs }
    }

    /// Adds one line (its text, after the timestamp) of time `ts_nanos`.
    pub fn push(&mut self, host: &str, ts_nanos: i64, out: Out, text: &[u8], truncated: bool) {
        let message = String::from_utf8_lossy(text);
        let raw_hex = matches!(message, std::borrow::Cow::Owned(_)).then(|| hex(text));
        let row = LogRow {
            ts: ts_nanos.div_euclid(1000),
            host,
            source: super::NAME,
            unit: Some(&self.unit),
            priority: Some(out.priority()),
            message: Some(&message),
            ..LogRow::default()
        };
        let mut attrs: Vec<(&str, &str)> = self.attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        attrs.push(("stream", out.name()));
        if let Some(h) = raw_hex.as_deref() {
            attrs.push(("raw_hex", h));
        }
        if truncated {
            attrs.push(("truncated", "true"));
        }
        self.logs.push(&row, attrs);
    }

    /// Rows pushed since the last call.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether none was pushed since the last call.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    fn finish(&mut self) -> Result<arrow_array::RecordBatch, SourceError> {
        self.logs.finish().map_err(|e| SourceError::Encode { source_name: super::NAME, error: e.to_string() })
    }
}

/// How one follow ended.
enum Ended {
    /// The stream ended (the container stopped) or broke: look again.
    Stream,
    /// The daemon refuses this container's logs (a log driver it cannot read back).
    Refused,
    /// Shutdown.
    Cancelled,
}

/// Follows container `id`'s logs until it is gone or stopped for good, or `cancel`:
/// each stop of the stream is followed by a look at the container, which is followed
/// again while it runs (a restart) or while a `start` was seen since the stream opened.
pub(crate) async fn follow(shared: Arc<Shared>, id: String, cancel: CancellationToken) -> Result<(), SourceError> {
    let mut pos: Option<LogPos> = None;
    let mut quiet = Duration::from_millis(100);
    loop {
        let starts = shared.starts(&id);
        let c = match shared.container(&id).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => {
                shared.stop_following(&id, None);
                return Ok(());
            }
            Err(e) => {
                shared.error(&e);
                if shared.stop_following(&id, Some(starts)) {
                    return Ok(());
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if !shared.config.selection.selects(&c.name, &c.labels) {
            shared.stop_following(&id, None);
            return Ok(());
        }
        let from = match pos {
            Some(p) => p,
            None => shared.log_start(&c).await,
        };
        let (ended, lines, now_pos) = read(&shared, &c, from, &cancel).await?;
        pos = Some(now_pos);
        match ended {
            Ended::Cancelled => return Ok(()),
            Ended::Refused => {
                shared.stop_following(&id, None);
                return Ok(());
            }
            Ended::Stream => {}
        }
        let running = shared.container(&id).await.map(|c| c.running).unwrap_or(false);
        if !running && shared.stop_following(&id, Some(starts)) {
            return Ok(());
        }
        // A stream that ended without a line while the container runs: do not spin.
        quiet = if lines == 0 { (quiet * 2).min(Duration::from_secs(5)) } else { Duration::from_millis(100) };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(if lines == 0 { quiet } else { Duration::ZERO }) => {}
        }
    }
}

/// One follow of `c`'s stream from `from`: rows committed in batches with the position.
/// Returns how it ended, the lines it committed and the position after them.
async fn read(
    shared: &Shared,
    c: &Container,
    from: LogPos,
    cancel: &CancellationToken,
) -> Result<(Ended, u64, LogPos), SourceError> {
    let path =
        format!("/containers/{}/logs?follow=1&stdout=1&stderr=1&timestamps=1&since={}", c.id, since_param(from.ts));
    let mut stream = match shared.docker.get(&path).await {
        Ok(s) => s,
        Err(e @ ApiError::Status { .. }) if !e.is_not_found() => {
            warn!(container = %c.name, error = %e, "docker: cannot read this container's logs");
            shared.error(&e);
            return Ok((Ended::Refused, 0, from));
        }
        Err(e) => {
            shared.error(&e);
            return Ok((Ended::Stream, 0, from));
        }
    };
    let cfg = &shared.config;
    let mut demux = Demux::new(c.tty);
    let mut lines = Lines::new(cfg.max_line_bytes);
    let mut resume = Resume::new(from);
    let mut rows = ContainerLogs::new(c);
    let mut pos = from;
    let mut committed = from;
    let mut total = 0u64;
    let mut first_pending: Option<Instant> = None;
    let node = Arc::clone(&shared.ctx.node);
    let mut unstamped = 0u64;
    let ended = loop {
        let deadline = first_pending.map(|t| t + cfg.batch_wait);
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, stream.chunk()).await.ok(),
                None => Some(stream.chunk().await),
            }
        };
        let got = tokio::select! {
            _ = cancel.cancelled() => break Ended::Cancelled,
            got = next => got,
        };
        let mut end = None;
        match got {
            // The batch's time is up: commit below.
            None => {}
            Some(Ok(Some(chunk))) => {
                demux.feed(&chunk, &mut |out, bytes| {
                    lines.feed(out, bytes, &mut |line| {
                        let (ts, text) = match split_timestamp(&line.bytes) {
                            Some((ts, text)) => (ts, text),
                            // Not stamped (never seen from Docker): kept, at read time.
                            None => {
                                unstamped += 1;
                                (now_micros() * 1000, &line.bytes[..])
                            }
                        };
                        if resume.is_new(ts) {
                            rows.push(&node, ts, line.out, text, line.truncated);
                            pos = pos.after(ts);
                        }
                    })
                });
                if !rows.is_empty() && first_pending.is_none() {
                    first_pending = Some(Instant::now());
                }
            }
            Some(Ok(None)) => end = Some(Ended::Stream),
            Some(Err(e)) => {
                shared.error(&e);
                end = Some(Ended::Stream);
            }
        }
        let due = first_pending.is_some_and(|t| t.elapsed() >= cfg.batch_wait);
        if !rows.is_empty() && (due || rows.len() >= cfg.batch_lines || end.is_some()) {
            let n = rows.len() as u64;
            let batch = rows.finish()?;
            let id = c.id.clone();
            let spooled = shared.commit(
                vec![(Table::Logs, batch)],
                |s| {
                    s.logs.insert(id, pos);
                },
                cancel,
            );
            if !spooled.await? {
                break Ended::Cancelled;
            }
            committed = pos;
            total += n;
            first_pending = None;
        }
        if let Some(e) = end {
            break e;
        }
    };
    let stats = &shared.stats;
    if lines.skipped > 0 {
        Stats::add(&stats.dropped, lines.skipped);
    }
    if unstamped > 0 {
        Stats::add(&stats.parse_errors, unstamped);
    }
    stats.read.fetch_add(total, Ordering::Relaxed);
    Ok((ended, total, committed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::docker::Labels;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn lines_of(tty: bool, max: usize, chunks: &[&[u8]]) -> (Vec<Line>, u64) {
        let mut d = Demux::new(tty);
        let mut l = Lines::new(max);
        let mut got = Vec::new();
        for c in chunks {
            d.feed(c, &mut |out, b| l.feed(out, b, &mut |line| got.push(line)));
        }
        (got, l.skipped)
    }

    #[test]
    fn frames_split_anywhere_give_the_same_lines() {
        let mut all = frame(1, b"out one\nout ");
        all.extend(frame(2, b"err one\n"));
        all.extend(frame(1, b"two\n"));
        let want = vec![
            Line { out: Out::Stdout, bytes: b"out one".to_vec(), truncated: false },
            Line { out: Out::Stderr, bytes: b"err one".to_vec(), truncated: false },
            Line { out: Out::Stdout, bytes: b"out two".to_vec(), truncated: false },
        ];
        for cut in 0..all.len() {
            for cut2 in cut..all.len() {
                let (got, _) = lines_of(false, 100, &[&all[..cut], &all[cut..cut2], &all[cut2..]]);
                assert_eq!(got, want, "cut at {cut}/{cut2}");
            }
        }
    }

    #[test]
    fn tty_is_raw_and_long_lines_are_cut_not_held() {
        let (got, skipped) = lines_of(true, 8, &[b"\x01\x00short\r\n", b"0123456789abcdef", b"XYZ\nnext\n"]);
        assert_eq!(got[0].bytes, b"\x01\x00short", "no framing read into a TTY stream");
        assert_eq!((got[1].bytes.as_slice(), got[1].truncated), (&b"01234567"[..], true));
        assert_eq!((got[2].bytes.as_slice(), got[2].truncated), (&b"next"[..], false));
        assert_eq!(skipped, 11);
    }

    #[test]
    fn timestamps_and_resume_at_the_boundary() {
        let (ts, text) = split_timestamp(b"2026-12-07T04:57:38.160075772Z out1").unwrap();
        assert_eq!((ts, text), (1_796_619_458_160_075_772, &b"out1"[..]));
        assert_eq!(split_timestamp(b"2026-12-07T04:57:38Z").unwrap().1, b"");
        assert!(split_timestamp(b"hello world").is_none());
        // Three lines at t=10 were spooled, then one at t=10 and one at t=11 were not.
        let pos = LogPos::default().after(9).after(10).after(10).after(10);
        assert_eq!(pos, LogPos { ts: 10, at: 3 });
        let mut r = Resume::new(pos);
        let replay = [9, 10, 10, 10, 10, 11];
        let new: Vec<bool> = replay.iter().map(|t| r.is_new(*t)).collect();
        assert_eq!(new, [false, false, false, false, true, true]);
        assert_eq!(pos.after(4), pos, "an earlier stamp never moves the position back");
    }

    #[test]
    fn rows_carry_the_contract_attrs_and_exact_bytes() {
        let c = Container {
            id: "f".repeat(64),
            name: "web-1".into(),
            image: "bb:1".into(),
            labels: Labels::from([
                (COMPOSE_PROJECT.to_string(), "shop".to_string()),
                (COMPOSE_SERVICE.to_string(), "web".to_string()),
            ]),
            tty: false,
            running: true,
            created_nanos: 0,
            restart_count: 0,
        };
        let mut r = ContainerLogs::new(&c);
        r.push("n1", 1_000_000_123_456, Out::Stderr, b"bad \xff", true);
        let b = r.finish().unwrap();
        let got = format!("{b:?}");
        for want in ["docker", "web", "web-1", "shop", "stderr", "62616420ff", "truncated", "bb:1"] {
            assert!(got.contains(want), "{want} in {got}");
        }
        let prio = format!("{:?}", b.column_by_name("priority").unwrap());
        assert!(prio.contains('3'), "{prio}");
    }
}
