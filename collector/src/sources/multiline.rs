//! Multi-line records of a tailed file (a Python traceback, a Rails backtrace, a
//! PostgreSQL statement spread over lines): lines joined with `\n` into one record before
//! the parser sees them.
//!
//! In: the tailer's lines, each with its file. Out: whole records ([`Record`]). A line
//! matching `start` begins a new record, so the record pending in that file is complete;
//! any other line continues it. A record is also complete when
//! - the next line would make it longer than `max_bytes`: it is emitted as it is and the
//!   line begins the next record (so nothing is dropped and a record stays bounded);
//! - no line came to it for `max_wait` ([`Joiner::expired`]): a program writes a record
//!   at once, so a pause means it ended;
//! - a line was cut at `max_line_bytes`: the pending record, then the cut line alone.
//!
//! A line that continues no record (the first line of a file, a `start` that does not
//! match the file's first line) begins one.
//!
//! Records are joined per path: lines a program writes to the new file after a rotation
//! continue the record pending under that name; lines still written to the renamed file
//! come under its new name and begin a record of their own (a record cut by a rotation can
//! be two rows; every line is still in exactly one).
//!
//! **Exactly once.** The lines of a pending record are already behind the tailer's
//! position, so the pending records ([`Pending`]) are saved in the source's state, in
//! the same spool group as the rows and that position ([`super::tailed`]): a restart
//! (clean or `kill -9`) resumes them with the lines after the saved position. A record
//! is thus emitted once, whole, however the collector stopped while it was pending.
//! Records pending in a state whose entry has no `multiline` any more are emitted on
//! start as they are ([`super::tailed::ParsedLines::restore`]), not forgotten.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How lines are joined, checked.
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    /// A line matching this begins a record.
    pub start: regex::bytes::Regex,
    /// Longest record, in bytes.
    pub max_bytes: usize,
    /// How long a pending record waits for its next line.
    pub max_wait: Duration,
}

/// One record: its lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The file its first line came from.
    pub file: String,
    /// The record's bytes.
    pub bytes: Vec<u8>,
    /// Whether it is a line cut at `max_line_bytes`.
    pub truncated: bool,
    /// When its first line was read (µs).
    pub read_ts: i64,
    /// How many lines it joins.
    pub lines: usize,
}

/// A record still open, as saved in the source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The file it is read from.
    pub file: String,
    /// Its text when UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its bytes hex-encoded when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// When its first line was read (µs).
    pub read_ts: i64,
    /// When its last line was read (µs): it waits `max_wait` from there.
    pub last_ts: i64,
    /// Lines joined so far.
    pub lines: usize,
}

impl Pending {
    /// The record's bytes; an entry that does not decode is an error (the state is the
    /// collector's own).
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.text, &self.hex) {
            (Some(t), None) => Ok(t.clone().into_bytes()),
            (None, Some(h)) => unhex(h).ok_or_else(|| format!("pending record of {}: bad hex", self.file)),
            _ => Err(format!("pending record of {}: neither text nor hex", self.file)),
        }
    }
}

#[derive(Debug)]
struct Open {
    bytes: Vec<u8>,
    read_ts: i64,
    last_ts: i64,
    lines: usize,
}

/// Joins the lines of each file into records.
#[derive(Debug)]
pub struct Joiner {
    config: MultilineConfig,
    open: BTreeMap<String, Open>,
}

impl Joiner {
    /// A joiner with no record pending.
    pub fn new(config: MultilineConfig) -> Self {
        Joiner { config, open: BTreeMap::new() }
    }

    /// Takes back the records pending when the state was saved; an entry that does not
    /// decode is an error (the state is the collector's own).
    pub fn restore(&mut self, pending: Vec<Pending>) -> Result<(), String> {
        for p in pending {
            let bytes = p.bytes()?;
            self.open.insert(p.file, Open { bytes, read_ts: p.read_ts, last_ts: p.last_ts, lines: p.lines });
        }
        Ok(())
    }

    /// The records pending now, for the state saved with the rows emitted so far.
    pub fn pending(&self) -> Vec<Pending> {
        self.open
            .iter()
            .map(|(file, o)| {
                let (text, hex) = match std::str::from_utf8(&o.bytes) {
                    Ok(t) => (Some(t.to_string()), None),
                    Err(_) => (None, Some(lake_format::logs::hex(&o.bytes))),
                };
                Pending { file: file.clone(), text, hex, read_ts: o.read_ts, last_ts: o.last_ts, lines: o.lines }
            })
            .collect()
    }

    /// Whether a record is pending.
    pub fn is_pending(&self) -> bool {
        !self.open.is_empty()
    }

    /// Adds one line of `file` read at `read_ts`; `out` gets the records it completes.
    pub fn push(&mut self, file: &str, line: &[u8], truncated: bool, read_ts: i64, out: &mut impl FnMut(Record)) {
        if truncated {
            self.close(file, out);
            out(Record { file: file.to_string(), bytes: line.to_vec(), truncated, read_ts, lines: 1 });
            return;
        }
        let starts = self.config.start.is_match(line);
        let max = self.config.max_bytes;
        match self.open.get_mut(file) {
            Some(o) if !starts && o.bytes.len() + 1 + line.len() <= max => {
                o.bytes.push(b'\n');
                o.bytes.extend_from_slice(line);
                o.last_ts = read_ts;
                o.lines += 1;
            }
            _ => {
                self.close(file, out);
                let o = Open { bytes: line.to_vec(), read_ts, last_ts: read_ts, lines: 1 };
                self.open.insert(file.to_string(), o);
            }
        }
    }

    /// Emits the records that waited `max_wait` since their last line, at `now` (µs).
    pub fn expired(&mut self, now: i64, out: &mut impl FnMut(Record)) {
        let wait = i64::try_from(self.config.max_wait.as_micros()).unwrap_or(i64::MAX);
        let done: Vec<String> =
            self.open.iter().filter(|(_, o)| now.saturating_sub(o.last_ts) >= wait).map(|(f, _)| f.clone()).collect();
        for f in done {
            self.close(&f, out);
        }
    }

    fn close(&mut self, file: &str, out: &mut impl FnMut(Record)) {
        if let Some(o) = self.open.remove(file) {
            out(Record {
                file: file.to_string(),
                bytes: o.bytes,
                truncated: false,
                read_ts: o.read_ts,
                lines: o.lines,
            });
        }
    }
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joiner(max_bytes: usize) -> Joiner {
        Joiner::new(MultilineConfig {
            start: regex::bytes::Regex::new(r"^\S").unwrap(),
            max_bytes,
            max_wait: Duration::from_secs(2),
        })
    }

    fn push(j: &mut Joiner, file: &str, line: &[u8], ts: i64) -> Vec<Record> {
        let mut out = Vec::new();
        j.push(file, line, false, ts, &mut |r| out.push(r));
        out
    }

    #[test]
    fn continuation_lines_join_per_file_until_the_next_start() {
        let mut j = joiner(1 << 10);
        assert!(push(&mut j, "/a", b"first", 1).is_empty());
        assert!(push(&mut j, "/b", b"other", 1).is_empty());
        assert!(push(&mut j, "/a", b"  more", 2).is_empty());
        let out = push(&mut j, "/a", b"second", 3);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].bytes.as_slice(), out[0].lines, out[0].read_ts), (&b"first\n  more"[..], 2, 1));
        let mut out = Vec::new();
        j.expired(3 + 1_999_999, &mut |r| out.push(r));
        assert_eq!(out.len(), 1, "/b waited long enough, /a not yet");
        assert_eq!(out[0].file, "/b");
        j.expired(3 + 2_000_000, &mut |r| out.push(r));
        assert_eq!(out[1].bytes, b"second");
        assert!(!j.is_pending());
    }

    #[test]
    fn a_record_stays_bounded_and_nothing_is_dropped() {
        let mut j = joiner(12);
        push(&mut j, "/a", b"start", 1);
        assert!(push(&mut j, "/a", b" 12345", 1).is_empty(), "exactly 12 bytes fit");
        let out = push(&mut j, "/a", b" x", 1);
        assert_eq!(out[0].bytes, b"start\n 12345");
        assert_eq!(j.pending()[0].text.as_deref(), Some(" x"));
        let mut out = Vec::new();
        j.push("/a", b"cut", true, 2, &mut |r| out.push(r));
        assert_eq!(out.len(), 2, "the pending record, then the cut line alone");
        assert!(out[1].truncated && !out[0].truncated);
    }

    #[test]
    fn pending_records_survive_a_state_round_trip_even_when_not_utf8() {
        let mut j = joiner(1 << 10);
        push(&mut j, "/a", b"bad \xff", 1);
        push(&mut j, "/a", b" tail", 2);
        push(&mut j, "/b", b"fine", 3);
        let saved = serde_json::to_string(&j.pending()).unwrap();
        let mut k = joiner(1 << 10);
        k.restore(serde_json::from_str(&saved).unwrap()).unwrap();
        assert_eq!(k.pending(), j.pending());
        let mut out = Vec::new();
        k.expired(i64::MAX, &mut |r| out.push(r));
        assert_eq!(out[0].bytes, b"bad \xff\n tail");
        assert_eq!(out[0].lines, 2);
        let bad = Pending { file: "/c".into(), text: None, hex: Some("zz".into()), read_ts: 0, last_ts: 0, lines: 1 };
        assert!(k.restore(vec![bad]).is_err());
    }
}
