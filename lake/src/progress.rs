//! Progress of long maintenance jobs (archive, restore, retention, compaction), shown the
//! same way wherever the job runs.
//!
//! A job reports through the [`Progress`] trait: a *phase* starts with its totals (items
//! and bytes, either may be 0 when unknown), then *advances*, free-text *messages*, and a
//! *finish*. Implementations:
//!
//! - [`TermProgress`]: the CLI running a job in-process. An indicatif bar with bytes, rate
//!   and ETA when stderr is a terminal; plain lines on stderr otherwise, at most one per
//!   [`PLAIN_EVERY`] per phase (plus the start and end of each phase), so a log file
//!   or CI output stays readable.
//! - [`LogProgress`]: jobs of `lake serve` with nobody watching (the cron): `tracing`
//!   events at phase boundaries and at most one per [`PLAIN_EVERY`] in between.
//! - [`EventProgress`]: jobs of `lake serve` started through the admin API. Each call
//!   becomes an [`Event`] sent, as one NDJSON line, to the client; the CLI feeds the lines
//!   it reads to [`replay`], which drives its own [`TermProgress`]. So `lake archive --now`
//!   looks the same whether it ran in-process or in the server.
//!
//! The event channel is bounded: when the client reads slower than the job advances,
//! advances are merged into the next one that fits (nothing is lost from the totals) and
//! other events are dropped and counted in [`EventProgress::dropped`]. A client that goes
//! away never stops the job.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Shortest interval between two plain progress lines of one phase.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where a job reports how far it got. Implementations are cheap to call often.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A new phase (e.g. "upload") with its totals; 0 means unknown.
    fn phase(&self, name: &str, items: u64, bytes: u64);
    /// `items` more items and `bytes` more bytes of the current phase are done.
    fn advance(&self, items: u64, bytes: u64);
    /// A line worth showing (a skipped partition, a retry).
    fn message(&self, text: &str);
    /// The current phase is over.
    fn finish(&self);
}

/// One progress call, as sent over the admin API (one JSON object per line). The last
/// line of a job is [`Event::Done`] or [`Event::Error`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// [`Progress::phase`].
    Phase {
        /// Phase name.
        name: String,
        /// Items in the phase (0: unknown).
        items: u64,
        /// Bytes in the phase (0: unknown).
        bytes: u64,
    },
    /// [`Progress::advance`].
    Advance {
        /// Items done since the last advance.
        items: u64,
        /// Bytes done since the last advance.
        bytes: u64,
    },
    /// [`Progress::message`].
    Message {
        /// The text.
        text: String,
    },
    /// [`Progress::finish`].
    Finish,
    /// The job ended; `report` is its result (job specific JSON).
    Done {
        /// The job's report.
        report: serde_json::Value,
    },
    /// The job failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Drives `p` with an event received from a server. Returns the report or error of the
/// final event, `None` for progress events.
pub fn replay(event: Event, p: &dyn Progress) -> Option<Result<serde_json::Value, String>> {
    match event {
        Event::Phase { name, items, bytes } => p.phase(&name, items, bytes),
        Event::Advance { items, bytes } => p.advance(items, bytes),
        Event::Message { text } => p.message(&text),
        Event::Finish => p.finish(),
        Event::Done { report } => return Some(Ok(report)),
        Event::Error { message } => return Some(Err(message)),
    }
    None
}

/// Reports nothing (tests, and jobs whose caller does not care).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64, _: u64) {}
    fn message(&self, _: &str) {}
    fn finish(&self) {}
}

/// Counters of one phase, shared by the plain-text implementations.
#[derive(Debug, Default)]
struct Tally {
    name: String,
    items: u64,
    bytes: u64,
    items_done: u64,
    bytes_done: u64,
    started: Option<Instant>,
    last_line: Option<Instant>,
}

impl Tally {
    fn start(&mut self, name: &str, items: u64, bytes: u64) {
        *self = Tally { name: name.to_string(), items, bytes, started: Some(Instant::now()), ..Tally::default() };
    }

    /// Adds an advance; true when a throttled line is due.
    fn add(&mut self, items: u64, bytes: u64) -> bool {
        self.items_done += items;
        self.bytes_done += bytes;
        let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if due {
            self.last_line = Some(Instant::now());
        }
        due
    }

    fn line(&self) -> String {
        let mut s = format!("{}: ", self.name);
        if self.items > 0 {
            s.push_str(&format!("{}/{} items", self.items_done, self.items));
        } else {
            s.push_str(&format!("{} items", self.items_done));
        }
        if self.bytes > 0 || self.bytes_done > 0 {
            s.push_str(&format!(", {}", human_bytes(self.bytes_done)));
            if self.bytes > 0 {
                let pct = (self.bytes_done as f64 / self.bytes as f64 * 100.0).min(100.0);
                s.push_str(&format!(" of {} ({pct:.0}%)", human_bytes(self.bytes)));
            }
        }
        if let Some(t) = self.started {
            s.push_str(&format!(", {:.1}s", t.elapsed().as_secs_f64()));
        }
        s
    }
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The CLI's progress: a bar on a terminal, throttled lines otherwise (both on stderr).
#[derive(Debug)]
pub struct TermProgress {
    prefix: String,
    bar: Mutex<Option<indicatif::ProgressBar>>,
    tally: Mutex<Tally>,
    terminal: bool,
}

impl TermProgress {
    /// Chooses the bar when stderr is a terminal. `prefix` starts each plain line
    /// (e.g. `lake archive`).
    pub fn new(prefix: &str) -> TermProgress {
        TermProgress::with_terminal(prefix, std::io::stderr().is_terminal())
    }

    /// Forces the bar (`true`) or plain lines (`false`).
    pub fn with_terminal(prefix: &str, terminal: bool) -> TermProgress {
        TermProgress {
            prefix: prefix.to_string(),
            bar: Mutex::new(None),
            tally: Mutex::new(Tally::default()),
            terminal,
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<indicatif::ProgressBar>> {
        self.bar.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_bar(name: &str, items: u64, bytes: u64) -> indicatif::ProgressBar {
        let (len, template) = if bytes > 0 {
            (bytes, "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}")
        } else {
            (items, "{prefix} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        bar
    }
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        self.finish();
        self.tally().start(name, items, bytes);
        if self.terminal {
            *self.bar() = Some(TermProgress::new_bar(name, items, bytes));
        } else {
            let what = match (items, bytes) {
                (0, 0) => String::new(),
                (i, 0) => format!(" ({i} items)"),
                (i, b) => format!(" ({i} items, {})", human_bytes(b)),
            };
            eprintln!("{}: {name}{what}", self.prefix);
        }
    }

    fn advance(&self, items: u64, bytes: u64) {
        let (due, line, bytes_mode) = {
            let mut t = self.tally();
            let due = t.add(items, bytes);
            (due, t.line(), t.bytes > 0)
        };
        if let Some(bar) = self.bar().as_ref() {
            bar.inc(if bytes_mode { bytes } else { items });
            if bytes_mode && items > 0 {
                let t = self.tally();
                bar.set_message(format!("{}/{} items", t.items_done, t.items));
            }
        } else if due && !self.terminal {
            eprintln!("{}: {line}", self.prefix);
        }
    }

    fn message(&self, text: &str) {
        match self.bar().as_ref() {
            Some(bar) => bar.println(text),
            None => eprintln!("{}: {text}", self.prefix),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar().take() {
            bar.finish_and_clear();
        }
        let t = self.tally();
        if t.started.is_some() {
            eprintln!("{}: {} done", self.prefix, t.line());
        }
        drop(t);
        *self.tally() = Tally::default();
    }
}

/// Progress of jobs nobody watches: `tracing` events, throttled like the plain lines.
#[derive(Debug)]
pub struct LogProgress {
    job: &'static str,
    tally: Mutex<Tally>,
}

impl LogProgress {
    /// Progress logged under `job` (e.g. `archive`).
    pub fn new(job: &'static str) -> LogProgress {
        LogProgress { job, tally: Mutex::new(Tally::default()) }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for LogProgress {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        self.tally().start(name, items, bytes);
        tracing::info!(job = self.job, phase = name, items, bytes, "phase started");
    }

    fn advance(&self, items: u64, bytes: u64) {
        let mut t = self.tally();
        if t.add(items, bytes) {
            tracing::info!(job = self.job, progress = %t.line(), "progress");
        }
    }

    fn message(&self, text: &str) {
        tracing::info!(job = self.job, "{text}");
    }

    fn finish(&self) {
        let t = self.tally();
        if t.started.is_some() {
            tracing::info!(job = self.job, progress = %t.line(), "phase done");
        }
    }
}

/// Progress sent as [`Event`]s over a bounded channel (the admin API's NDJSON stream).
#[derive(Debug)]
pub struct EventProgress {
    tx: tokio::sync::mpsc::Sender<Event>,
    /// Advances not yet sent because the channel was full.
    pending: Mutex<(u64, u64)>,
    dropped: AtomicU64,
}

/// Capacity of the event channel of one admin request.
pub const EVENT_CHANNEL: usize = 256;

impl EventProgress {
    /// Progress feeding `tx`.
    pub fn new(tx: tokio::sync::mpsc::Sender<Event>) -> EventProgress {
        EventProgress { tx, pending: Mutex::new((0, 0)), dropped: AtomicU64::new(0) }
    }

    /// Events dropped because the client read too slowly (advances are merged, never dropped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends an event; a full or closed channel drops it (counted unless closed).
    pub fn send(&self, e: Event) {
        self.flush_pending();
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends the final event, waiting for room: the client must see how the job ended.
    pub async fn send_last(&self, e: Event) {
        self.flush_pending();
        let _ = self.tx.send(e).await;
    }

    fn flush_pending(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if *p != (0, 0) && self.tx.try_send(Event::Advance { items: p.0, bytes: p.1 }).is_ok() {
            *p = (0, 0);
        }
    }
}

impl Progress for EventProgress {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        self.send(Event::Phase { name: name.to_string(), items, bytes });
    }

    fn advance(&self, items: u64, bytes: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.0 += items;
        p.1 += bytes;
        if self.tx.try_send(Event::Advance { items: p.0, bytes: p.1 }).is_ok() {
            *p = (0, 0);
        }
    }

    fn message(&self, text: &str) {
        self.send(Event::Message { text: text.to_string() });
    }

    fn finish(&self) {
        self.send(Event::Finish);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<String>>);

    impl Progress for Record {
        fn phase(&self, name: &str, items: u64, bytes: u64) {
            self.0.lock().unwrap().push(format!("phase {name} {items} {bytes}"));
        }
        fn advance(&self, items: u64, bytes: u64) {
            self.0.lock().unwrap().push(format!("advance {items} {bytes}"));
        }
        fn message(&self, text: &str) {
            self.0.lock().unwrap().push(format!("message {text}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    #[test]
    fn events_round_trip_through_ndjson_and_replay() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let p = EventProgress::new(tx);
        p.phase("upload", 2, 100);
        p.advance(1, 60);
        p.message("retrying x");
        p.advance(1, 40);
        p.finish();
        p.send(Event::Done { report: serde_json::json!({"files": 2}) });
        let rec = Record::default();
        let mut end = None;
        while let Ok(e) = rx.try_recv() {
            let line = serde_json::to_string(&e).unwrap();
            let back: Event = serde_json::from_str(&line).unwrap();
            if let Some(r) = replay(back, &rec) {
                end = Some(r);
            }
        }
        assert_eq!(
            *rec.0.lock().unwrap(),
            ["phase upload 2 100", "advance 1 60", "message retrying x", "advance 1 40", "finish"]
        );
        assert_eq!(end, Some(Ok(serde_json::json!({"files": 2}))));
        assert_eq!(serde_json::to_string(&Event::Finish).unwrap(), r#"{"event":"finish"}"#);
    }

    #[test]
    fn a_full_channel_merges_advances_and_counts_dropped_events() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let p = EventProgress::new(tx);
        p.phase("upload", 10, 0);
        p.advance(1, 0);
        p.advance(2, 0); // full: pending
        p.message("lost"); // full: dropped
        assert_eq!(p.dropped(), 1);
        assert!(matches!(rx.try_recv(), Ok(Event::Phase { .. })));
        assert_eq!(rx.try_recv().ok(), Some(Event::Advance { items: 1, bytes: 0 }));
        p.advance(3, 0);
        assert_eq!(rx.try_recv().ok(), Some(Event::Advance { items: 5, bytes: 0 }));
    }

    #[test]
    fn plain_lines_are_throttled_and_sizes_read_well() {
        let mut t = Tally::default();
        t.start("upload", 4, 2048);
        assert!(t.add(1, 1024));
        assert!(!t.add(1, 512));
        assert!(t.line().starts_with("upload: 2/4 items, 1.5 KiB of 2.0 KiB (75%)"), "{}", t.line());
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
