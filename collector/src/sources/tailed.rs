//! The counters of a [`crate::tail::Tailer`] forwarded into its source's
//! [`SourceStats`], shared by the sources on the tailer (Caddy, `[[json_file]]`, ufw and
//! fail2ban files).
//!
//! Mapping: read and decode `errors` → `errors`; `lost` (a position found in no file, the
//! rest of a `.gz` that stops decompressing) → `errors` and `dropped`, with a warning;
//! `rotations` → `rotations`; `rolled_resumed` + `rolled_read` → `rolled_files`, with an
//! info line; `truncations` → a warning (the lines stay visible: they are read again).

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::stats::{SourceStats, Stats};
use crate::tail::TailCounters;

/// What was forwarded so far (the tailer's counters only grow).
#[derive(Debug, Default)]
pub(crate) struct TailReport {
    errors: u64,
    lost: u64,
    truncations: u64,
    rotations: u64,
    rolled: u64,
}

impl TailReport {
    /// Adds what changed since the last call to `stats`, and says what needs saying.
    pub(crate) fn forward(&mut self, source: &str, c: &TailCounters, stats: &SourceStats) {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let now = TailReport {
            errors: get(&c.errors),
            lost: get(&c.lost),
            truncations: get(&c.truncations),
            rotations: get(&c.rotations),
            rolled: get(&c.rolled_resumed) + get(&c.rolled_read),
        };
        let lost = now.lost - self.lost;
        Stats::add(&stats.errors, (now.errors - self.errors) + lost);
        // How many lines a vanished file still held is unknown: each one counts once.
        Stats::add(&stats.dropped, lost);
        Stats::add(&stats.rotations, now.rotations - self.rotations);
        Stats::add(&stats.rolled_files, now.rolled - self.rolled);
        if lost > 0 {
            warn!(
                source,
                files = lost,
                "log files rolled away before they were read to their end; their unread lines are lost"
            );
        }
        if now.rolled > self.rolled {
            info!(
                source,
                files = now.rolled - self.rolled,
                "reading rolled log files the collector had not read (rotated while it was down or between two polls)"
            );
        }
        if now.truncations > self.truncations {
            warn!(
                source,
                count = now.truncations - self.truncations,
                "a log file was truncated and is read again from 0"
            );
        }
        *self = now;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::TailReport;
    use crate::stats::SourceStats;
    use crate::tail::TailCounters;

    #[test]
    fn counters_are_forwarded_once() {
        let c = TailCounters::default();
        let s = SourceStats::default();
        let mut r = TailReport::default();
        c.lost.store(1, Ordering::Relaxed);
        c.errors.store(2, Ordering::Relaxed);
        c.rotations.store(3, Ordering::Relaxed);
        c.rolled_read.store(2, Ordering::Relaxed);
        c.rolled_resumed.store(1, Ordering::Relaxed);
        r.forward("caddy", &c, &s);
        r.forward("caddy", &c, &s);
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(get(&s.errors), 3);
        assert_eq!(get(&s.dropped), 1);
        assert_eq!(get(&s.rotations), 3);
        assert_eq!(get(&s.rolled_files), 3);
    }
}
