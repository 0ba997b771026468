//! `logs` rows a source writes about its own runs (a command that failed or hung, a
//! scrape that failed), so the lake shows why data is missing next to the data; and the
//! rule for how often such a failure is also logged locally.

use std::sync::atomic::AtomicU64;

use lake_format::logs::{LogRow, LogsBuilder};
use tracing::{info, warn};

use crate::stats::Stats;

/// syslog priority of a failed run.
pub const PRIORITY_ERR: i64 = 3;

/// One note: what happened to a run of `ident` (a command, a scrape target).
#[derive(Debug, Clone, Copy)]
pub struct Note<'a> {
    /// When the run started, µs.
    pub ts: i64,
    /// The node.
    pub node: &'a str,
    /// `source` of the row.
    pub source: &'a str,
    /// Which run: the configured entry's name.
    pub ident: &'a str,
    /// syslog priority ([`PRIORITY_ERR`] for a failure).
    pub priority: i64,
    /// What happened.
    pub message: &'a str,
    /// Details; empty values are left out.
    pub attrs: &'a [(&'a str, &'a str)],
}

impl Note<'_> {
    /// Adds the note as a `logs` row: `source`, `ident`, `priority`, `message`, `attrs`.
    pub fn push_to(&self, logs: &mut LogsBuilder) {
        let row = LogRow {
            ts: self.ts,
            host: self.node,
            source: self.source,
            ident: Some(self.ident),
            priority: Some(self.priority),
            message: Some(self.message),
            ..LogRow::default()
        };
        logs.push(&row, self.attrs.iter().filter(|(_, v)| !v.is_empty()).copied());
    }
}

/// When a repeating failure is logged: the first, every 10th in a row, and the recovery.
#[derive(Debug, Default)]
pub struct FailureLog {
    consecutive: u64,
}

impl FailureLog {
    /// A run failed; whether to log it (the count so far is returned for the message).
    pub fn failed(&mut self) -> Option<u64> {
        self.consecutive += 1;
        (self.consecutive == 1 || self.consecutive.is_multiple_of(10)).then_some(self.consecutive)
    }

    /// A run succeeded; `Some(failures)` when it ends a run of failures.
    pub fn succeeded(&mut self) -> Option<u64> {
        let n = std::mem::take(&mut self.consecutive);
        (n > 0).then_some(n)
    }

    /// The outcome of one run of `source` (a scrape, a poll): a failure counts in `errors`
    /// and is logged as [`FailureLog::failed`] says; the first success after failures is
    /// logged once.
    pub fn record(&mut self, source: &str, failure: Option<&str>, errors: &AtomicU64) {
        match failure {
            Some(f) => {
                Stats::add(errors, 1);
                if let Some(n) = self.failed() {
                    warn!(source, failures_in_a_row = n, "{f}");
                }
            }
            None => {
                if let Some(n) = self.succeeded() {
                    info!(source, after_failures = n, "{source} works again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lake_format::Table;

    use super::*;

    #[test]
    fn rows_conform_and_failures_are_logged_sparingly() {
        let mut r = LogsBuilder::new();
        let attrs = [("stderr", "x"), ("empty", "")];
        let note = Note {
            ts: 1,
            node: "n",
            source: "exec",
            ident: "ups",
            priority: PRIORITY_ERR,
            message: "timed out",
            attrs: &attrs,
        };
        note.push_to(&mut r);
        let b = r.finish().unwrap();
        assert_eq!(lake_format::wire::conform(Table::Logs, &Table::Logs.schema(), &b).unwrap(), b);
        let mut f = FailureLog::default();
        let logged: Vec<bool> = (0..20).map(|_| f.failed().is_some()).collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 3);
        assert_eq!(f.succeeded(), Some(20));
        assert_eq!(f.succeeded(), None);
    }
}
