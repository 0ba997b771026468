//! `logs` rows a source writes about its own runs (a command that failed or hung, a
//! scrape that failed), so the lake shows why data is missing next to the data; and the
//! rule for how often such a failure is also logged locally.

use lake_format::rows::TableBuilder;
use lake_format::Table;

/// syslog priority of a failed run.
pub const PRIORITY_ERR: i64 = 3;

/// Accumulates `logs` rows: `source`, `ident`, `priority`, `message`, `attrs`.
#[derive(Debug)]
pub struct NoteRows {
    b: TableBuilder,
    cols: [usize; 7],
}

impl Default for NoteRows {
    fn default() -> Self {
        Self::new()
    }
}

impl NoteRows {
    /// Empty rows.
    pub fn new() -> Self {
        let b = TableBuilder::new(Table::Logs);
        let c = |n: &str| b.column(n).expect("logs column in the catalog");
        let cols = [c("ts"), c("host"), c("source"), c("ident"), c("priority"), c("message"), c("attrs")];
        NoteRows { b, cols }
    }

    /// Adds one row.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ts: i64,
        node: &str,
        source: &str,
        ident: &str,
        priority: i64,
        message: &str,
        attrs: &[(&str, &str)],
    ) {
        let [c_ts, host, src, id, prio, msg, at] = self.cols;
        self.b.ts(c_ts, ts);
        self.b.text(host, Some(node));
        self.b.text(src, Some(source));
        self.b.text(id, Some(ident));
        self.b.int(prio, Some(priority));
        self.b.text(msg, Some(message));
        self.b.map(at, attrs.iter().filter(|(_, v)| !v.is_empty()).copied());
        self.b.end_row();
    }
}

crate::sources::rows_deref!(NoteRows);

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_conform_and_failures_are_logged_sparingly() {
        let mut r = NoteRows::new();
        r.push(1, "n", "exec", "ups", PRIORITY_ERR, "timed out", &[("stderr", "x"), ("empty", "")]);
        let b = r.finish().unwrap();
        assert_eq!(lake_format::wire::conform(Table::Logs, &Table::Logs.schema(), &b).unwrap(), b);
        let mut f = FailureLog::default();
        let logged: Vec<bool> = (0..20).map(|_| f.failed().is_some()).collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 3);
        assert_eq!(f.succeeded(), Some(20));
        assert_eq!(f.succeeded(), None);
    }
}
